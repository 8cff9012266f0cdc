"""Network edges: the gRPC and HTTP servers, auth, and the error → status mapping."""
