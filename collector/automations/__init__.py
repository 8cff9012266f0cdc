"""Automations at run time: the pure trigger-evaluation core (``evaluator``) and action
templates (``templates``). The models live in ``collector.domain.automations``; running
actions, persisting state and the background loop belong to the server."""
