package probe;

import java.util.function.Function;

import flare.Request;
import flare.Response;

/** The other handler contract: a plain Function from Request to Response. */
public class Shout implements Function<Request, Response> {
    @Override
    public Response apply(Request request) {
        return Response.text(202, request.text().toUpperCase()).header("x-contract", "function");
    }
}
