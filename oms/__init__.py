"""Core return state: tables, migrations, the data contract (import/export) and, later, the return
lifecycle, refunds, exchanges, loyalty, inventory, disposition rules and the notifications outbox.

`oms` imports none of the analytics packages (`features`, `models`, `pipelines`, `dashboards`, `api`).
"""
