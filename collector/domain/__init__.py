"""The event grammar and the other domain models: pydantic and the standard library only."""
