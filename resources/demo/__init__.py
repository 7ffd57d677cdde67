"""The demo Django project: a bookshop with one page per performance problem from the talk.

Run it on its own (the database goes to a per-user cache dir, or ``$DJANGOSCOPE_DEMO_DB``)::

    python -m djangoscope.resources.demo.manage migrate
    python -m djangoscope.resources.demo.manage seed_bookshop
    python -m djangoscope.resources.demo.manage runserver 127.0.0.1:8000
    python -m djangoscope.resources.demo.traffic http://127.0.0.1:8000

``pages.PAGES`` lists every page with its exact query count.
"""
