"""Model-atmosphere providers: an embedded C3K/ATLAS12 emulator and a user's MARCS grid."""
