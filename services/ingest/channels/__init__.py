"""Channel adapters: messaging and voice providers in, replies out in each channel's form."""
