"""Ray Serve deployments: router, model slots, rollout controller, and the app builder."""
