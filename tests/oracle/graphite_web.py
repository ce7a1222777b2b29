"""Runs requests against a stock graphite-web 1.1.10 in-process (Django's
test client, no server), reading the whisper files under --whisper-dir and,
with --carbonlink, a carbon cache (or graunt) for points not yet written.

  graphite_web.py --whisper-dir DIR [--carbonlink HOST:PORT:INSTANCE] PATH...

Prints a JSON list with {"status": code, "body": text} for each PATH
(e.g. "/render/?target=a.b&format=json&from=-1h&now=1700000000").
"""
import argparse
import base64
import json
import os
import sys
import tempfile


def client(whisper_dir, carbonlink=()):
    """A Django test client over a fresh graphite-web 1.1.10 (its own
    settings, sqlite database and index in a temporary directory)."""
    work = tempfile.mkdtemp(prefix="graphite-web-")
    with open(os.path.join(work, "graunt_local_settings.py"), "w") as f:
        f.write("SECRET_KEY = 'graunt-tests'\n")
        f.write("STORAGE_DIR = %r\n" % work)
        f.write("LOG_DIR = %r\n" % work)
        f.write("INDEX_FILE = %r\n" % os.path.join(work, "index"))
        f.write("WHISPER_DIR = %r\n" % whisper_dir)
        f.write("STANDARD_DIRS = [%r]\n" % whisper_dir)
        f.write("CARBONLINK_HOSTS = %r\n" % list(carbonlink))
        f.write("CARBONLINK_TIMEOUT = 5.0\n")
        f.write("DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': %r}}\n"
                % os.path.join(work, "graphite.db"))
    sys.path.insert(0, work)
    os.environ["GRAPHITE_SETTINGS_MODULE"] = "graunt_local_settings"
    os.environ["DJANGO_SETTINGS_MODULE"] = "graphite.settings"
    import inspect
    if not hasattr(inspect, "getargspec"):  # graphite-web 1.1 predates Python 3.11
        inspect.getargspec = inspect.getfullargspec
    if not hasattr(inspect, "formatargspec"):
        # The Python 2 spelling /functions uses: "(a, b=1, *rest, **kw)".
        def formatargspec(args, varargs=None, varkw=None, defaults=None, *_):
            defaults = defaults or ()
            first_default = len(args) - len(defaults)
            parts = []
            for i, arg in enumerate(args):
                if i >= first_default:
                    parts.append("%s=%r" % (arg, defaults[i - first_default]))
                else:
                    parts.append(arg)
            if varargs:
                parts.append("*" + varargs)
            if varkw:
                parts.append("**" + varkw)
            return "(" + ", ".join(parts) + ")"
        inspect.formatargspec = formatargspec
    import django
    django.setup()
    from django.core.management import call_command
    from django.test import Client

    # graphite-web keeps user profiles in its database, even for /render.
    call_command("migrate", verbosity=0, run_syncdb=True)

    # A graphite-web exception becomes its HTTP 500, as a server would answer.
    return Client(raise_request_exception=False)


def answer(response):
    """A response as {"status", "body", "content_type"} (and the body in
    base64 when it is a pickle)."""
    body = b"".join(response) if response.streaming else response.content
    out = {"status": response.status_code, "body": body.decode("utf-8", "replace"),
           "content_type": response.get("Content-Type", "")}
    if "pickle" in out["content_type"]:
        out["body_base64"] = base64.b64encode(body).decode()
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--whisper-dir", required=True)
    parser.add_argument("--carbonlink", action="append", default=[])
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args()
    web = client(args.whisper_dir, args.carbonlink)
    json.dump([answer(web.get(path)) for path in args.paths], sys.stdout)


if __name__ == "__main__":
    main()
