/* tests/nocurl/curl/curl.h - stands in front of the real libcurl header (-Itests/nocurl) to make a
 * machine look as if it had no libcurl headers: the build must then still build everything but
 * ./clair and say how to get them (tests/nocurl/run.sh). */
#error "libcurl's headers are hidden for this test"
