An idle HTTP/1.1 stream takes about 3 KiB of memory instead of 9.5: once its headers are out it takes
its TCP connection over from twisted.web and lets the request go. The response's end now closes the
connection (an EventSource reconnects on a new one anyway).
