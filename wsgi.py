"""WSGI entry point: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Under gunicorn's gevent worker, gunicorn.conf.py monkey-patches before this module
(and so ``ssl`` and ``requests``) is imported.
"""

from bupple_flask.app import create_app

app = create_app()
