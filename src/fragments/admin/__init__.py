"""The operator view: `/admin` (a static page) and `/api/admin/*` for platform operators."""
