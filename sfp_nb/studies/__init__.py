"""The studies: one module per chapter family, built on the library (`sfp_nb`); never imported by it."""
