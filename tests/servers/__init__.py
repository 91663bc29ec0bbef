"""Real protocol servers for the tests and the demo: one module each.

Each starts a private instance on loopback from a temporary directory, binds first (or waits for
the port), and stops it cleanly. Data directories live under /tmp with mode 0755 because the
servers' own users (dovecot's mail uid, INN's ``news``) must traverse them.
"""
