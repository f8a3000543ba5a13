package flare;

/**
 * A Flare function in Java: a public class with a public no-argument
 * constructor that implements this interface (or
 * {@code java.util.function.Function<Request, Response>}). One instance
 * serves every request of a worker, possibly several at once when the
 * function's concurrency is above 1.
 */
public interface Handler {
    Response handle(Request request) throws Exception;
}
