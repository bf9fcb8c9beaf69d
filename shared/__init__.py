"""Care-by-Design contracts and the scaffolding every service shares.

Nothing in here knows about a particular service: services import `shared`, never each other.
"""
