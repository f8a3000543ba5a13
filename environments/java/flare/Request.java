package flare;

import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/** One HTTP request to a function. */
public final class Request {
    private final String method;
    private final String path;
    private final Map<String, String> headers;
    private final byte[] body;

    public Request(String method, String path, Map<String, String> headers, byte[] body) {
        this.method = method;
        this.path = path;
        this.headers = Collections.unmodifiableMap(headers);
        this.body = body;
    }

    public String method() { return method; }

    /** The path and query, as the caller sent them after the function's prefix. */
    public String path() { return path; }

    /** Header names in lower case; the first value of each. */
    public Map<String, String> headers() { return headers; }

    public String header(String name) { return headers.get(name.toLowerCase()); }

    public byte[] body() { return body.clone(); }

    public String text() { return new String(body, StandardCharsets.UTF_8); }

    /** The first value of each query parameter. */
    public Map<String, String> query() {
        Map<String, String> query = new LinkedHashMap<>();
        int mark = path.indexOf('?');
        if (mark < 0) return query;
        for (String pair : path.substring(mark + 1).split("&")) {
            if (pair.isEmpty()) continue;
            int eq = pair.indexOf('=');
            String key = URLDecoder.decode(eq < 0 ? pair : pair.substring(0, eq), StandardCharsets.UTF_8);
            String value = eq < 0 ? "" : URLDecoder.decode(pair.substring(eq + 1), StandardCharsets.UTF_8);
            query.putIfAbsent(key, value);
        }
        return query;
    }

    /**
     * The function's environment variables, configs and secrets (Java
     * cannot change its own process environment, so they are here).
     */
    public static String env(String name) {
        String value = Worker.ENV.get(name);
        return value != null ? value : System.getenv(name);
    }
}
