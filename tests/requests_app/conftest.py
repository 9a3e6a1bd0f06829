# The portal's fixtures live in tests/portal_fixtures.py (shared with tests/e2e); its constants are here too.
from ..portal_fixtures import (  # noqa: F401
    ADMINS,
    APPROVERS,
    DEMO_CLUSTER_ID,
    DEVOPS,
    KEY_VAULT_SECRETS_USER,
    SUBSCRIPTION,
    TEAM_PAYMENTS,
    TEAM_SEARCH,
    VAULT_SCOPE,
)
