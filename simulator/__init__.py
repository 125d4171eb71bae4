"""Synthetic retailers written in the data contract: a tiny hand-readable sample (`sample`) and, with
ground truth kept apart under `_truth/`, a realistic retailer with planted fraud (`retailer`).

Imports `oms` (for the contract) only.
"""
