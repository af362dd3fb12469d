"""The gateway: the HTTP service for what comes from outside (webhook triggers, events, the
approvals inbox, the codec server). ``gateway.app:create_app`` builds it; ``wfa serve`` runs it."""
