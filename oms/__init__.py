"""The base layer and the core return state: the settings object and default policy every package reads
(`oms.settings`, `policy.toml`), tables, migrations, the data contract (import/export), the return
lifecycle, refunds, exchanges, loyalty, inventory, disposition rules and the notifications outbox.

`oms` imports none of the analytics packages (`features`, `models`, `pipelines`, `dashboards`, `api`).
"""
