package app;

import flare.Handler;
import flare.Request;
import flare.Response;

/**
 * {{name}}: a Flare function. {@code /?name=ada} answers "Hello, ada!" whatever
 * the method: HTTP callers send GET, timer and queue triggers POST.
 * Flare makes one instance (public, no-argument constructor) and calls
 * {@link #handle} for every request, possibly from several threads at once.
 */
public class Main implements Handler {
    @Override
    public Response handle(Request request) {
        String name = request.query().getOrDefault("name", "");
        if (name.isEmpty()) {
            name = "world";
        }
        System.out.println("greeting " + name); // goes to `flare fn logs`
        return Response.ok("Hello, " + name + "!\n");
    }
}
