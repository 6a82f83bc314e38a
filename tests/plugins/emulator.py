"""pytest plugin: the Stripe emulator over real HTTP (filled in by the emulator)."""
