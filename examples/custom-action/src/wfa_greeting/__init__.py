"""An example team's own action for temporal-flows (see the README, "Your own actions")."""
