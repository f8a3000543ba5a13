import flare.Request;
import flare.Response;
import java.nio.charset.StandardCharsets;
import java.util.Map;

/**
 * Tests for app.Main. After `flare build`:
 * java -cp build/classes:build/flare-api test/MainTest.java
 */
public class MainTest {
    private static int failures;

    public static void main(String[] args) throws Exception {
        expect(call("GET", "/?name=ada"), 200, "Hello, ada!\n");
        expect(call("GET", "/"), 200, "Hello, world!\n");
        expect(call("GET", "/?name="), 200, "Hello, world!\n");
        expect(call("GET", "/?name=Ada%20L+B"), 200, "Hello, Ada L B!\n");
        expect(call("POST", "/?name=ada"), 200, "Hello, ada!\n");
        if (failures > 0) {
            System.err.println(failures + " check(s) failed");
            System.exit(1);
        }
        System.out.println("all checks passed");
    }

    /** Calls the handler as Flare's worker does: a method, path, headers and body. */
    private static Response call(String method, String path) throws Exception {
        return new app.Main().handle(new Request(method, path, Map.of(), new byte[0]));
    }

    private static void expect(Response response, int status, String body) {
        String got = new String(response.body(), StandardCharsets.UTF_8);
        if (response.status() != status || !got.equals(body)) {
            failures++;
            System.err.printf("FAIL: want %d %s, got %d %s%n", status, body.strip(), response.status(), got.strip());
        }
    }
}
