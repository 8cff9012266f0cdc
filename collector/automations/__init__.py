"""Automations at run time: the pure trigger-evaluation core (``evaluator``), action templates
(``templates``), events about automations and the loop guard (``events``), running actions
(``actions``), backtests (``backtest``) and the server's loop around them (``runner``). The
models live in ``collector.domain.automations``; their tables in ``collector.store``."""
