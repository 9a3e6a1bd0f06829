"""The portal's REST API under /api/v1/ (issue 12 api; README "The REST API").

Views are thin: they call the same service functions as the pages (workflow, changes, lifecycle) and ask `access`
who may see and do what, so every rule holds here as it does there. Callers authenticate with Entra bearer tokens
for the portal's own API (auth.py); errors are problem+json (errors.py); writes are rate limited like the pages'.
"""
