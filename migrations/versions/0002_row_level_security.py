"""row-level security on PostgreSQL

Tenant tables are readable by their owner (and conversations by their team when shared) and
writable by their owner only. The caller's identity comes from `app.user_id` / `app.team_id`,
set per transaction by the app. FORCE makes the policies bind the tables' owner too; only a
role with BYPASSRLS (never the app's) sees past them. Nothing to do on SQLite.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 23:05:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ME = "current_setting('app.user_id', true)"
MY_TEAM = "current_setting('app.team_id', true)"
OWN_CONVERSATION = (
    f"EXISTS (SELECT 1 FROM conversations c WHERE c.id = conversation_id AND c.user_id = {ME})"
)
OWN_FRAGMENT = (
    "EXISTS (SELECT 1 FROM fragments f JOIN conversations c ON c.id = f.conversation_id "
    f"WHERE f.id = fragment_id AND c.user_id = {ME})"
)

# table -> (who may read, who may write); subqueries on RLS tables are filtered by their own
# policies, so "visible conversation" is simply "in SELECT id FROM conversations".
POLICIES: dict[str, tuple[str, str]] = {
    "conversations": (f"user_id = {ME} OR (shared AND team_id = {MY_TEAM})", f"user_id = {ME}"),
    "messages": ("conversation_id IN (SELECT id FROM conversations)", OWN_CONVERSATION),
    "fragments": ("conversation_id IN (SELECT id FROM conversations)", OWN_CONVERSATION),
    "execution_results": ("fragment_id IN (SELECT id FROM fragments)", OWN_FRAGMENT),
    "provider_keys": (f"user_id = {ME}", f"user_id = {ME}"),
    "usage_records": (f"user_id = {ME} OR team_id = {MY_TEAM}", f"user_id = {ME}"),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, (read, write) in POLICIES.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY {table}_read ON {table} FOR SELECT USING ({read})")
        op.execute(f"CREATE POLICY {table}_insert ON {table} FOR INSERT WITH CHECK ({write})")
        op.execute(
            f"CREATE POLICY {table}_update ON {table} FOR UPDATE USING ({write}) "
            f"WITH CHECK ({write})"
        )
        op.execute(f"CREATE POLICY {table}_delete ON {table} FOR DELETE USING ({write})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in POLICIES:
        for action in ("read", "insert", "update", "delete"):
            op.execute(f"DROP POLICY IF EXISTS {table}_{action} ON {table}")
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
