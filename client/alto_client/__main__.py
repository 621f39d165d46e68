from alto_client.cli import main

main()
