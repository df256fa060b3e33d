"""An example Django project that starts, shows and cancels workflow runs."""
