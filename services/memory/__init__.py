"""Memory service: every turn stored, recent context recalled."""
