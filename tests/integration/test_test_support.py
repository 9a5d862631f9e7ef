"""The test support itself: the vhost isolation and the misbehaving SMTP server really work."""

from __future__ import annotations

import smtplib

import pika
import pytest
import sqlalchemy as sa

from shared.topology import QUEUE, declare_topology
from tests.support.broker import BrokerAdmin, ready_count
from tests.support.smtp import SmtpTestServer


def test_each_test_gets_an_empty_vhost_of_its_own(
    broker_admin: BrokerAdmin, vhost: str, amqp_url: str
) -> None:
    assert vhost != "/"
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    declare_topology(channel)
    channel.basic_publish("", QUEUE, b"{}")
    connection.close()
    assert ready_count(amqp_url, QUEUE) == 1
    # The same queue in another fresh vhost is empty: tests cannot see each other's messages.
    other = broker_admin.add_vhost(vhost + "-other")
    try:
        connection = pika.BlockingConnection(pika.URLParameters(other))
        declare_topology(connection.channel())
        connection.close()
        assert ready_count(other, QUEUE) == 0
    finally:
        broker_admin.delete_vhost(vhost + "-other")


def _send(server: SmtpTestServer) -> None:
    with smtplib.SMTP(server.host, server.port, timeout=5) as client:
        client.sendmail("a@example.com", ["b@example.com"], b"Subject: hi\r\n\r\nbody\r\n")


def test_smtp_server_fails_transiently_then_accepts(smtp_server: SmtpTestServer) -> None:
    smtp_server.fail_transiently(2)
    for _ in range(2):
        with pytest.raises(smtplib.SMTPDataError) as failure:
            _send(smtp_server)
        assert failure.value.smtp_code == 451
    _send(smtp_server)
    assert [m.message["Subject"] for m in smtp_server.wait_for(1)] == ["hi"]


def test_smtp_server_refuses_and_goes_down(smtp_server: SmtpTestServer) -> None:
    smtp_server.refuse_permanently()
    with pytest.raises(smtplib.SMTPDataError) as failure:
        _send(smtp_server)
    assert failure.value.smtp_code == 550
    smtp_server.refuse_permanently(None)
    smtp_server.stop()
    with pytest.raises(ConnectionRefusedError):
        _send(smtp_server)
    smtp_server.start()
    _send(smtp_server)
    assert len(smtp_server.wait_for(1)) == 1


def test_postgres_database_is_fresh(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as connection:
        tables = connection.execute(
            sa.text("select count(*) from information_schema.tables where table_schema='public'")
        ).scalar_one()
    engine.dispose()
    assert tables == 0
