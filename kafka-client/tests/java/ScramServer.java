// Java's own SCRAM server (Kafka's ScramSaslServer) on stdin/stdout, for the Rust client to
// authenticate against. Arguments: mechanism user password. Each input line is a base64 client
// message; each output line is "OK <base64 server message>" or "ERR <reason>".
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.HashMap;
import javax.security.auth.callback.Callback;
import javax.security.auth.callback.CallbackHandler;
import javax.security.auth.callback.NameCallback;
import javax.security.auth.callback.UnsupportedCallbackException;
import org.apache.kafka.common.security.scram.ScramCredential;
import org.apache.kafka.common.security.scram.ScramCredentialCallback;
import org.apache.kafka.common.security.scram.internals.ScramFormatter;
import org.apache.kafka.common.security.scram.internals.ScramMechanism;
import org.apache.kafka.common.security.scram.internals.ScramSaslServer;

public class ScramServer {
    public static void main(String[] args) throws Exception {
        ScramMechanism mechanism = ScramMechanism.forMechanismName(args[0]);
        String user = args[1];
        ScramCredential credential = new ScramFormatter(mechanism).generateCredential(args[2], 4096);
        String[] seenName = new String[1];
        CallbackHandler handler = callbacks -> {
            for (Callback c : callbacks) {
                if (c instanceof NameCallback) {
                    seenName[0] = ((NameCallback) c).getDefaultName();
                } else if (c instanceof ScramCredentialCallback) {
                    ((ScramCredentialCallback) c).scramCredential(user.equals(seenName[0]) ? credential : null);
                } else {
                    throw new UnsupportedCallbackException(c);
                }
            }
        };
        ScramSaslServer server = new ScramSaslServer(mechanism, new HashMap<>(), handler);
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.US_ASCII));
        String line;
        while ((line = in.readLine()) != null) {
            try {
                byte[] reply = server.evaluateResponse(Base64.getDecoder().decode(line));
                System.out.println("OK " + Base64.getEncoder().encodeToString(reply));
            } catch (Exception e) {
                System.out.println("ERR " + e.getClass().getSimpleName() + ": " + e.getMessage());
            }
            System.out.flush();
            if (server.isComplete()) {
                System.out.println("COMPLETE " + server.getAuthorizationID());
                System.out.flush();
            }
        }
    }
}
