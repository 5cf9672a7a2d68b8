"""Quotas: rolling-day rate limits (`limits`), monthly token budgets (`budget`, `guest_budget`),
the figures a tier grants (`tiers`), prepared sandbox runs already paid for (`credits`), and the
usage and budget routes (`router`). Below the typed State, which holds the limiter, the usage
cache and the prepare credits; it depends on storage, settings, the principal and the one Redis
client only."""
