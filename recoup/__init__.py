"""Application shell on top of every package: the `recoup` command line (`recoup.cli`), the demo and
logging. Settings live in the base layer (`oms.settings`) so that every package may read them."""
