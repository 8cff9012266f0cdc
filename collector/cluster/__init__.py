"""What the collectors of one DuckLake cluster share in its PostgreSQL catalog database besides
the lake itself: the automations leader's lock (``leadership.py``) and the automations state
(``automation_state.py``), in the ``herald`` schema (``schema.py``)."""
