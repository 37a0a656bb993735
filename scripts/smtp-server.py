"""A real SMTP server for hookrelay's email tests: aiosmtpd (from PyPI) on 127.0.0.1:PORT,
STARTTLS required before anything else, AUTH (PLAIN or LOGIN) required with one user, a
certificate from a fresh local CA (trustme) whose PEM it writes to DIR/ca.pem before it
listens. Every message it accepts is saved as DIR/<n>.eml, with DIR/<n>.json saying who sent
it to whom, whether the session was encrypted, which user authenticated, and the message's
subject, Message-ID and text as a mail client decodes them.

    .venv-brokers/bin/python scripts/smtp-server.py --port PORT --dir DIR [--user U --password P]
"""

import argparse
import email
import email.policy
import json
import pathlib
import ssl
import threading
import time

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--dir", required=True)
parser.add_argument("--user", default="alerts")
parser.add_argument("--password", default="s3cret")
args = parser.parse_args()
out = pathlib.Path(args.dir)

ca = trustme.CA()
cert = ca.issue_cert("127.0.0.1", "localhost")
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
cert.configure_cert(context)
ca.cert_pem.write_to_path(str(out / "ca.pem"))


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == args.user.encode()
        and auth_data.password == args.password.encode()
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


class Keep:
    async def handle_DATA(self, server, session, envelope):
        name = str(time.time_ns())
        (out / f"{name}.eml").write_bytes(envelope.original_content or envelope.content)
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        meta = {
            "subject": str(message["subject"]),
            "message_id": str(message["message-id"]),
            "body": message.get_body().get_content(),
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "tls": session.ssl is not None,
            "user": session.auth_data.login.decode() if session.auth_data else None,
        }
        (out / f"{name}.json").write_text(json.dumps(meta))
        return "250 OK kept"


controller = Controller(
    Keep(),
    hostname="127.0.0.1",
    port=args.port,
    tls_context=context,
    require_starttls=True,
    authenticator=authenticate,
    auth_required=True,
    auth_require_tls=True,
)
controller.start()
threading.Event().wait()
