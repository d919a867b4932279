"""Migrations: applied on start, all or nothing, on a populated database."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

import keysat.models
from keysat.db import MIGRATIONS_DIR, Database, MigrationError
from support import create_policy, create_product, issue_license

BROKEN_MIGRATION = '''
"""A migration that changes the schema and data, then fails half-way."""

import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
    op.add_column("products", sa.Column("half_column", sa.Text, nullable=True))
    op.execute("UPDATE products SET name = 'clobbered'")
    op.execute("DELETE FROM machines")
    raise RuntimeError("simulated crash in the middle of a migration")


def downgrade() -> None:
    pass
'''


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def broken_scripts(tmp_path: Path) -> Path:
    scripts = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "9999_broken.py").write_text(
        BROKEN_MIGRATION.replace("{head}", head_revision())
    )
    return scripts


async def snapshot(db: Database) -> dict[str, object]:
    async with db.read() as session:
        tables = await session.run_sync(
            lambda s: sorted(sa.inspect(s.connection()).get_table_names())
        )
        columns = await session.run_sync(
            lambda s: sorted(c["name"] for c in sa.inspect(s.connection()).get_columns("products"))
        )
        names = (await session.execute(sa.text("SELECT name FROM products ORDER BY name"))).all()
        machines = (await session.execute(sa.text("SELECT count(*) FROM machines"))).scalar_one()
        version = (await session.execute(sa.text("SELECT version_num FROM alembic_version"))).all()
    return {
        "tables": tables,
        "columns": columns,
        "names": names,
        "machines": machines,
        "version": version,
    }


async def test_failed_migration_leaves_populated_database_unchanged(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    await create_product(server, "alpha")
    await create_product(server, "beta")
    await create_policy(server, "alpha", max_machines=5)
    lic = await issue_license(server, "alpha", policy_slug="pro")
    for fingerprint in ("m1", "m2"):
        response = await server.client.post(
            "/v1/machines/activate", json={"key": lic["license_key"], "fingerprint": fingerprint}
        )
        assert response.json()["ok"] is True
    db = server.state.db
    before = await snapshot(db)
    assert before["machines"] == 2

    with pytest.raises(MigrationError, match="simulated crash"):
        await db.migrate(broken_scripts(tmp_path))

    after = await snapshot(db)
    assert after == before
    assert "half_done" not in after["tables"]  # type: ignore[operator]
    # The server keeps working on the old schema and a later good migration run is a no-op.
    await db.migrate()
    response = await server.client.post("/v1/validate", json={"key": lic["license_key"]})
    assert response.json()["ok"] is True


async def test_migrate_is_idempotent_and_sqlite_runs_in_wal_mode(server) -> None:  # type: ignore[no-untyped-def]
    db = server.state.db
    await db.migrate()
    await db.migrate()
    async with db.read() as session:
        version = (await session.execute(sa.text("SELECT version_num FROM alembic_version"))).all()
        assert len(version) == 1
        if db.is_sqlite:
            mode = (await session.execute(sa.text("PRAGMA journal_mode"))).scalar_one()
            assert mode == "wal"
            keys = (await session.execute(sa.text("PRAGMA foreign_keys"))).scalar_one()
            assert keys == 1


def _schema_differences(connection: sa.Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = compare_metadata(context, keysat.models.Base.metadata)
    return [
        diff
        for diff in found
        # Expression indexes cannot be reflected on SQLite, so they always look missing.
        if not (diff[0] in ("add_index", "remove_index") and diff[1].name.endswith("_lower"))
    ]


async def test_migrated_schema_matches_the_models(server) -> None:  # type: ignore[no-untyped-def]
    async with server.state.db.engine.connect() as connection:
        differences = await connection.run_sync(_schema_differences)
    assert differences == []
