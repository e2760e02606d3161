// Prints "code name retriable" for every error code of this Kafka version.
import org.apache.kafka.common.errors.RetriableException;
import org.apache.kafka.common.protocol.Errors;

public class ErrorCodes {
    public static void main(String[] args) {
        for (Errors e : Errors.values()) {
            boolean retriable = e.exception() instanceof RetriableException;
            System.out.println(e.code() + " " + e.name() + " " + retriable);
        }
    }
}
