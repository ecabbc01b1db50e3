An idle HTTP/2 stream takes about 2.8 KiB of memory instead of 9: once its headers are out it lets its
request go and writes straight to its HTTP/2 stream, as an HTTP/1.1 stream does.
