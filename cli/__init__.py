"""Herald's command line (Typer). Commands parse, call the client, render; no business logic."""
