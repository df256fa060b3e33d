"""A Flask app that starts, shows and cancels runs: ``flask --app examples.flask_app.app run``."""
