"""Wire formats → domain; nothing below this package sees protobuf."""
