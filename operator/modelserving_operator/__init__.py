"""The ModelServing operator: kopf registrations over pure rendering and a runtime of its own."""
