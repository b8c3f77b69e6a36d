"""The web console at ``/ui``: static files, a session endpoint and a same-origin proxy to the
public API (docs/console.md). The console holds no private path into the gateway: every page's
data comes through ``/ui/api/…``, which forwards to the public routes with the session's key."""
