package probe;

/** A class that is no handler: specializing to it must fail clearly. */
public class NotAHandler {
    public String handle(String request) {
        return request;
    }
}
