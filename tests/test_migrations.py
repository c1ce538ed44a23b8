"""The memory table's Alembic migration, used the README's way by a host app with Flask-Migrate.

Each test makes a host app in ``tmp_path`` from the README's example and runs the README's
``flask db`` steps in a subprocess, on an empty database of its own: PostgreSQL (a database
made for the test and dropped after it) and SQLite. After ``flask db upgrade`` the table and its
index exist as the engine defines them, the engine reads and writes them, and autogenerate finds
nothing to do for them; the host's own revisions are written to the host's folder.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine, inspect
from sqlalchemy.engine import Engine

from bupple_flask.conversations import ConversationStore, conversations_table
from bupple_flask.memory import ConversationMemory, memory_table
from tests.test_readme import readme_blocks
from tests.test_text_compression import content_compression

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_VERSIONS = ROOT / "bupple_flask" / "migrations" / "versions"
NO_CHANGES = "No changes in schema detected."
CONVENTION = (
    'from sqlalchemy import MetaData\n'
    'db = SQLAlchemy(app, metadata=MetaData(naming_convention={"ix": "ix_%(column_0_label)s", '
    '"uq": "uq_%(table_name)s_%(column_0_name)s", "pk": "pk_%(table_name)s"}))'
)


class HostApp:
    """The README's Flask-Migrate example in a folder of its own, and ``flask`` run there."""

    def __init__(self, folder: Path, database_url: str, *, conventions: bool = False, **env: str) -> None:
        self.folder = folder
        source = readme_blocks()["migrations-app"]
        if conventions:
            assert source.count("db = SQLAlchemy(app)") == 1
            source = source.replace("db = SQLAlchemy(app)", CONVENTION)
        folder.mkdir(exist_ok=True)
        (folder / "app.py").write_text(source + "\n")
        site = folder.parent / "site"  # this checkout's bupple_flask alone (not the repository's wsgi.py)
        site.mkdir(exist_ok=True)
        if not (site / "bupple_flask").exists():
            (site / "bupple_flask").symlink_to(ROOT / "bupple_flask", target_is_directory=True)
        self.env = {
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
            "PYTHONPATH": str(site),
            "FLASK_APP": "app",  # what flask finds in the folder anyway, were the venv's .pth not adding a wsgi.py
            "DATABASE_URL": database_url,
            "HOME": str(folder),
            **env,
        }

    def run(self, command: str) -> str:
        """Run one shell line (``flask db ...``) in the app's folder; its output, or the test fails."""
        result = subprocess.run(
            shlex.split(command), cwd=self.folder, env=self.env, capture_output=True, text=True, timeout=120
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{command!r} exited {result.returncode}:\n{output}"
        return output

    def include_our_migrations(self) -> None:
        """Add the README's ``version_locations`` line to the ``[alembic]`` section of alembic.ini."""
        ini = self.folder / "migrations" / "alembic.ini"
        text = ini.read_text()
        assert text.count("[alembic]\n") == 1
        ini.write_text(text.replace("[alembic]\n", "[alembic]\n" + readme_blocks()["migrations-ini"] + "\n"))

    def run_readme_steps(self) -> list[tuple[str, str]]:
        """The README's steps in order (the alembic.ini line added after ``flask db init``); each with its output."""
        outputs = []
        for line in readme_blocks()["migrations-steps"].splitlines():
            outputs.append((line, self.run(line)))
            if line == "flask db init":
                self.include_our_migrations()
        return outputs

    def revisions(self) -> dict[str, str]:
        """The host's own revision files: name -> source."""
        return {path.name: path.read_text() for path in (self.folder / "migrations" / "versions").glob("*.py")}


def assert_table_as_the_engine_defines_it(sql_engine: Engine, name: str) -> None:
    """Columns (types' kinds, nullability), the unique message id and the parent index, read from the database."""
    expected = memory_table(MetaData(), name)
    inspector = inspect(sql_engine)
    assert name in inspector.get_table_names()
    columns = {column["name"]: column for column in inspector.get_columns(name)}
    assert list(columns) == [column.name for column in expected.columns]
    for column in expected.columns:
        assert columns[column.name]["nullable"] == column.nullable, column.name
    indexes = {index["name"]: index["column_names"] for index in inspector.get_indexes(name)}
    assert indexes[f"ix_{name}_parent"] == ["parent_class", "parent_id", "id"]
    assert [u["column_names"] for u in inspector.get_unique_constraints(name)] == [["message_id"]]


def assert_conversations_table_as_the_engine_defines_it(sql_engine: Engine, name: str) -> None:
    """The conversations table: columns, nullability, primary key and the owner index."""
    expected = conversations_table(MetaData(), name)
    inspector = inspect(sql_engine)
    columns = {column["name"]: column for column in inspector.get_columns(name)}
    assert list(columns) == [column.name for column in expected.columns]
    for column in expected.columns:
        assert columns[column.name]["nullable"] == column.nullable, column.name
    assert inspector.get_pk_constraint(name)["constrained_columns"] == ["id"]
    indexes = {index["name"]: index["column_names"] for index in inspector.get_indexes(name)}
    assert indexes[f"ix_{name}_owner_updated"] == ["owner", "updated_at", "id"]


def assert_engine_uses_it(sql_engine: Engine, name: str) -> None:
    """The engine's memory writes and reads the migrated table."""
    memory = ConversationMemory(sql_engine, memory_table(MetaData(), name)).set_parent("conversation", "migrated")
    memory.add_user_message("Is the table there?")
    memory.add_assistant_message("It is.", metadata={"ending": "complete"})
    assert memory.get_messages() == [
        {"role": "user", "content": "Is the table there?"},
        {"role": "assistant", "content": "It is."},
    ]
    assert memory.get_records()[1]["metadata"] == {"ending": "complete"}


def upgrade_and_check(
    host: HostApp, database_url: str, table: str, conversations: str = "bupple_conversations"
) -> None:
    """The README's steps on an empty database, then everything a host app notices."""
    package_files = sorted(PACKAGE_VERSIONS.glob("*.py"))
    first_upgrade = next(output for line, output in host.run_readme_steps() if line == "flask db upgrade")
    assert "Running upgrade  -> bupple_0001" in first_upgrade
    assert "Running upgrade bupple_0001 -> bupple_0002" in first_upgrade
    assert "Running upgrade bupple_0002 -> bupple_0003" in first_upgrade
    notes = [source for source in host.revisions().values() if "create_table('note'" in source]
    assert len(notes) == 1, host.revisions()  # autogenerate: the host's model ...
    assert table not in notes[0] and conversations not in notes[0]  # ... and nothing for our tables
    assert sorted(PACKAGE_VERSIONS.glob("*.py")) == package_files  # nothing written into the package
    sql_engine = create_engine(database_url)
    try:
        assert_table_as_the_engine_defines_it(sql_engine, table)
        assert_conversations_table_as_the_engine_defines_it(sql_engine, conversations)
        if sql_engine.dialect.name == "postgresql":
            assert content_compression(sql_engine, table) == "l"  # lz4 (tests/test_text_compression.py)
        assert_engine_uses_it(sql_engine, table)
        store = ConversationStore(sql_engine, conversations_table(MetaData(), conversations),
                                  memory_table(MetaData(), table), "user:1")  # fmt: skip
        made = store.create("Migrated")
        assert store.list()["conversations"] == [made] and made["created_at"].endswith("+00:00")
    finally:
        sql_engine.dispose()
    assert NO_CHANGES in host.run("flask db migrate -m again")
    assert host.run("flask db heads").count("(head)") == 1


def test_upgrade_creates_the_table_on_an_empty_postgresql_database(tmp_path: Path, empty_postgres: str) -> None:
    upgrade_and_check(HostApp(tmp_path / "host", empty_postgres), empty_postgres, "engine_memory")


def test_lz4_on_postgresql_goes_with_a_downgrade_and_comes_back(tmp_path: Path, empty_postgres: str) -> None:
    """``bupple_0003`` alone: the memory table's text back to the server's compression, then lz4 again."""
    host = HostApp(tmp_path / "host", empty_postgres)
    host.run_readme_steps()
    sql_engine = create_engine(empty_postgres)
    try:
        assert content_compression(sql_engine, "engine_memory") == "l"
        assert "Running downgrade bupple_0003 -> bupple_0002" in host.run("flask db downgrade bupple_0002")
        assert content_compression(sql_engine, "engine_memory") == ""
        assert_engine_uses_it(sql_engine, "engine_memory")
        assert "Running upgrade bupple_0002 -> bupple_0003" in host.run("flask db upgrade")
        assert content_compression(sql_engine, "engine_memory") == "l"
    finally:
        sql_engine.dispose()


def test_upgrade_creates_the_table_on_an_empty_sqlite_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'host.sqlite3'}"
    upgrade_and_check(HostApp(tmp_path / "host", url), url, "engine_memory")


def test_the_configured_table_name_under_the_hosts_naming_convention(tmp_path: Path, empty_postgres: str) -> None:
    """``BUPPLE_MEMORY_TABLE`` names the table; a host's naming convention names its constraints, both ways."""
    host = HostApp(tmp_path / "host", empty_postgres, conventions=True, BUPPLE_MEMORY_TABLE="chat_log",
                   BUPPLE_CONVERSATIONS_TABLE="chats")  # fmt: skip
    upgrade_and_check(host, empty_postgres, "chat_log", "chats")
    sql_engine = create_engine(empty_postgres)
    try:
        inspector = inspect(sql_engine)
        assert "engine_memory" not in inspector.get_table_names()
        assert "bupple_conversations" not in inspector.get_table_names()
        assert inspector.get_pk_constraint("chats")["name"] == "pk_chats"
        assert inspector.get_unique_constraints("chat_log")[0]["name"] == "uq_chat_log_message_id"
        assert inspector.get_pk_constraint("chat_log")["name"] == "pk_chat_log"
    finally:
        sql_engine.dispose()


LATER_RELEASE = '''"""What a later release's migration looks like: the next revision on the bupple branch."""
from alembic import op

revision = "bupple_0099"
down_revision = "bupple_0003"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_engine_memory_role", "engine_memory", ["role"])


def downgrade():
    op.drop_index("ix_engine_memory_role", table_name="engine_memory")
'''


def test_an_existing_table_is_stamped_and_a_later_release_joins_with_the_same_step(tmp_path: Path) -> None:
    """The README's two other cases: a table made by ``db.create_all()``; a release that adds a migration."""
    url = f"sqlite:///{tmp_path / 'host.sqlite3'}"
    host = HostApp(tmp_path / "host", url)
    host.run("python -c 'from app import app, db\nwith app.app_context(): db.create_all()'")
    steps = readme_blocks()["migrations-steps"].splitlines()
    join = next(line for line in steps if "--head heads" in line)
    host.run("flask db init")
    host.include_our_migrations()
    host.run(join)
    host.run("flask db stamp bupple_0002")
    assert "Running upgrade bupple_0002 ->" in host.run("flask db upgrade")  # lz4 (none on SQLite), the join
    assert NO_CHANGES in host.run("flask db migrate -m nothing")

    later = tmp_path / "later_release"  # stands for the package's own folder in that release
    later.mkdir()
    (later / "0099_later.py").write_text(LATER_RELEASE)
    ini = host.folder / "migrations" / "alembic.ini"
    ini.write_text(ini.read_text().replace("bupple_flask:migrations/versions", f"bupple_flask:migrations/versions {later}"))
    assert host.run("flask db heads").count("(head)") == 2
    host.run(join)
    assert "Running upgrade bupple_0003 -> bupple_0099" in host.run("flask db upgrade")
    assert host.run("flask db heads").count("(head)") == 1
    sql_engine = create_engine(url)
    try:
        assert "ix_engine_memory_role" in {index["name"] for index in inspect(sql_engine).get_indexes("engine_memory")}
    finally:
        sql_engine.dispose()


def test_the_table_name_comes_from_the_app_being_migrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flask import Flask

    from bupple_flask import BuppleEngine
    from bupple_flask.migrations import memory_table_name

    assert memory_table_name() == "engine_memory"  # plain Alembic, no app: the default ...
    monkeypatch.setenv("BUPPLE_MEMORY_TABLE", "from_environment")
    assert memory_table_name() == "from_environment"  # ... or the environment's
    bare = Flask("bare")
    bare.config["BUPPLE_MEMORY_DB_TABLE_NAME"] = "from_config"  # the seed's name for the setting
    with bare.app_context():
        assert memory_table_name() == "from_config"
    app = Flask("host", instance_path=str(tmp_path))
    app.config["BUPPLE_MEMORY_TABLE"] = "from_the_engine"
    BuppleEngine(app)
    with app.app_context():
        assert memory_table_name() == "from_the_engine"
    from bupple_flask.migrations import conversations_table_name

    assert conversations_table_name() == "bupple_conversations"
    with app.app_context():
        assert conversations_table_name() == "bupple_conversations"
