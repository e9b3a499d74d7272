"""speechbrain-mambadapter: parameter-efficient transfer learning of speech and audio models."""
