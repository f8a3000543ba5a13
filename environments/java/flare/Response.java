package flare;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/** A function's answer: a status, headers and a body. */
public final class Response {
    private final int status;
    private final List<String[]> headers = new ArrayList<>();
    private final byte[] body;

    public Response(int status, byte[] body) {
        this.status = status;
        this.body = body == null ? new byte[0] : body.clone();
    }

    /** 200 with a text body. */
    public static Response ok(String text) {
        return text(200, text);
    }

    public static Response text(int status, String text) {
        return new Response(status, text.getBytes(StandardCharsets.UTF_8))
            .header("content-type", "text/plain; charset=utf-8");
    }

    /** A body that is already JSON. */
    public static Response json(int status, String json) {
        return new Response(status, json.getBytes(StandardCharsets.UTF_8))
            .header("content-type", "application/json");
    }

    public Response header(String name, String value) {
        headers.add(new String[] {name, value});
        return this;
    }

    public int status() { return status; }

    public List<String[]> headers() { return headers; }

    public byte[] body() { return body; }
}
