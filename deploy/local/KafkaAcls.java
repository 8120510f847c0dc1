// Grants ACLs on the broker at args[0] (through a listener whose principal is a super user):
// each further argument is one grant, `PRINCIPAL:RESOURCE_TYPE:PATTERN_TYPE:NAME:OPERATION`,
// e.g. `User:p2p:TOPIC:PREFIXED:p2p-test-:ALL` or `User:p2p:GROUP:LITERAL:app-match:READ`.
// Run with the broker's own classpath: `java -cp "libs/*" KafkaAcls.java 127.0.0.1:9095 ...`.
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class KafkaAcls {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        List<AclBinding> bindings = new ArrayList<>();
        for (int i = 1; i < args.length; i++) {
            // The principal has a colon of its own (User:name): split from the right.
            String[] parts = args[i].split(":");
            if (parts.length != 6) {
                System.err.println("not PRINCIPAL_TYPE:NAME:RESOURCE_TYPE:PATTERN_TYPE:NAME:OPERATION: " + args[i]);
                System.exit(2);
            }
            String principal = parts[0] + ":" + parts[1];
            ResourcePattern resource = new ResourcePattern(
                ResourceType.fromString(parts[2]), parts[4], PatternType.fromString(parts[3]));
            AccessControlEntry entry = new AccessControlEntry(
                principal, "*", AclOperation.fromString(parts[5]), AclPermissionType.ALLOW);
            bindings.add(new AclBinding(resource, entry));
        }
        try (Admin admin = Admin.create(props)) {
            admin.createAcls(bindings).all().get(30, TimeUnit.SECONDS);
            // The controller has committed the grant; the broker's authorizer applies it from
            // the metadata log a moment later. Return only once the broker lists every binding,
            // so that what runs next is judged by the new ACLs (a test once raced this).
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            for (AclBinding binding : bindings) {
                while (admin.describeAcls(binding.toFilter()).values().get(30, TimeUnit.SECONDS).isEmpty()) {
                    if (System.nanoTime() > deadline) {
                        System.err.println("granted but not yet in force after 30 s: " + binding);
                        System.exit(1);
                    }
                    Thread.sleep(50);
                }
            }
        }
        System.out.println("granted " + bindings.size() + " ACL(s)");
    }
}
