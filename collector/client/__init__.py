"""Talking to Herald from another process: ``interface.HeraldReader`` (the one reading
interface, with its typed result shapes), implemented by ``remote.HeraldClient`` (a server,
over gRPC) and ``local.LocalReader`` (a store file, read-only: the CLI's ``--db``);
``automations.AutomationsClient`` for the automations API; ``connection`` for what the gRPC
clients share. Nothing is imported here, so that reading a file never loads grpc."""
