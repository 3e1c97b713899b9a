"""Everything that touches video files: locating ffmpeg, probing, decoding, dataset indexes."""
