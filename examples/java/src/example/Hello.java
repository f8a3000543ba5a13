package example;

import flare.Handler;
import flare.Request;
import flare.Response;

/** A Java function for Flare: `GET /fn/hello-java?name=you`. */
public class Hello implements Handler {
    @Override
    public Response handle(Request request) {
        String name = request.query().getOrDefault("name", "world");
        System.out.println("greeting " + name);
        return Response.ok("Hello, " + name + "!\n");
    }
}
