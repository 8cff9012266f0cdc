"""Automations at run time (docs/architecture.md shows the parts): the evaluation loop around
the pure trigger-evaluation core (``evaluation``, ``evaluator``), firings dispatched to action
runs (``dispatch``, ``lanes``, ``actions``, ``templates``), the API's service (``service``,
``backtest``), the runtime's own events and the loop guard (``emitter``, ``events``), and the
lifecycle (``runtime``). ``collector/app.py`` wires them. The records and models live in
``collector.domain``; their tables in ``collector.store``."""
