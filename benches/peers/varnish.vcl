vcl 4.1;
# Varnish as a CDN edge: URL-only hash (the HTTP/1.1 and the hitch TLS listeners share objects), streaming
# misses, grace for serving stale while refreshing. Template.
backend origin {
    .host = "127.0.0.1";
    .port = "@ORIGIN_PORT@";
    .connect_timeout = 2s;
    .first_byte_timeout = 30s;
    .between_bytes_timeout = 10s;
}
sub vcl_recv {
    unset req.http.Cookie;
    if (req.method != "GET" && req.method != "HEAD") { return (pass); }
    return (hash);
}
sub vcl_hash {
    hash_data(req.url);
    return (lookup);
}
sub vcl_backend_response {
    set beresp.do_stream = true;
    if (bereq.url ~ "\.(m3u8|mpd)$") { set beresp.grace = 2s; } else { set beresp.grace = 1h; }
}
