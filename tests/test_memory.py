"""Conversation memory with the seed's names, in the host app's database (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import inspect

from bupple_flask import BuppleEngine


@pytest.fixture(params=["sqlite", "postgresql"])
def host(request, tmp_path, postgres_url):
    """A host app with its own SQLAlchemy instance and model, as a user would have."""
    url = f"sqlite:///{tmp_path / 'host.sqlite3'}" if request.param == "sqlite" else postgres_url
    table = f"memory_{uuid.uuid4().hex[:8]}"
    app = Flask(__name__)
    # tables of this test's own: drop_all() below drops every table on the metadata, ours included
    app.config.update(SQLALCHEMY_DATABASE_URI=url, BUPPLE_MEMORY_DB_TABLE_NAME=table,
                      BUPPLE_CONVERSATIONS_TABLE=f"conversations_{table}")
    db = SQLAlchemy(app)

    class Note(db.Model):
        __tablename__ = f"notes_{table}"
        id = db.Column(db.Integer, primary_key=True)
        text = db.Column(db.String(50))

    engine = BuppleEngine(app, db=db)
    with app.app_context():
        db.create_all()  # creates the host's tables and ours
        yield app, db, engine, table, Note
        db.session.rollback()
        db.drop_all()


def test_seed_api(host) -> None:
    app, db, engine, table, _ = host
    memory = engine.memory()
    memory.set_parent("conversation", 42)
    memory.add_system_message("Be brief.")
    memory.add_user_message("Write a story about a fox")
    memory.add_assistant_message("Once upon a time...")
    assert memory.get_messages() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Write a story about a fox"},
        {"role": "assistant", "content": "Once upon a time..."},
    ]
    assert memory.get_messages(limit=2)[0]["role"] == "user"
    other = engine.memory().set_parent("conversation", "43")
    assert other.get_messages() == []
    assert engine.memory().set_parent("conversation", "42").count() == 3


def test_add_message_with_type_metadata_and_clear(host) -> None:
    _, _, engine, _, _ = host
    memory = engine.memory().set_parent("conversation", "m1")
    message_id = memory.add_message("assistant", "partial", type="text", metadata={"ending": "interrupted"})
    (record,) = memory.get_records()
    assert record["message_id"] == message_id and record["metadata"] == {"ending": "interrupted"}
    assert record["type"] == "text" and record["created_at"]
    assert memory.clear() == 1 and memory.get_messages() == []


def test_table_has_the_original_columns_and_index(host) -> None:
    app, db, _, table, _ = host
    inspector = inspect(db.engine)
    columns = {c["name"] for c in inspector.get_columns(table)}
    assert columns == {
        "id", "parent_class", "parent_id", "message_id", "role", "content", "type",
        "metadata", "driver", "created_at", "updated_at",
    }
    indexed = [tuple(i["column_names"]) for i in inspector.get_indexes(table)]
    assert any(cols[:2] == ("parent_class", "parent_id") for cols in indexed)


def test_memory_never_commits_the_host_session(host) -> None:
    _, db, engine, _, Note = host
    db.session.add(Note(text="unsaved"))
    engine.memory().set_parent("conversation", "x").add_user_message("hi")
    db.session.rollback()
    assert db.session.query(Note).count() == 0


def test_roles_are_validated(host) -> None:
    from bupple_flask import InvalidRequestError

    memory = host[2].memory().set_parent("conversation", "r")
    with pytest.raises(InvalidRequestError):
        memory.add_message("wizard", "x")
    with pytest.raises(RuntimeError):
        host[2].memory().add_user_message("no parent set")


def test_engine_uses_a_registered_sqlalchemy_when_none_is_passed(tmp_path) -> None:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'a.sqlite3'}"
    db = SQLAlchemy(app)
    BuppleEngine(app)
    assert app.extensions["bupple"].db is db


def test_add_messages_stores_several_in_order(host) -> None:
    memory = host[2].memory().set_parent("conversation", "bulk")
    ids = memory.add_messages([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert len(set(ids)) == 2
    assert memory.get_messages() == [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]


def test_history_is_bounded_newest_first_in_the_database(host) -> None:
    _, _, engine, _, _ = host
    memory = engine.memory().set_parent("conversation", "long")
    for index in range(6):
        memory.add_user_message(f"q{index} " + "x" * 97)  # 100 characters each
        memory.add_assistant_message(f"a{index} " + "y" * 97)
    newest = memory.get_messages(max_chars=350)
    assert [m["content"][:2] for m in newest] == ["a4", "q5", "a5"]  # whole messages, oldest first
    assert len(memory.get_messages()) == 12  # nothing deleted
